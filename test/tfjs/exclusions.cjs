// exclusions.cjs — the tfjs-core specs that the `llava` backend does not run, one reason each.
// Each `spec` is a substring of jasmine's full spec name (setupTestFilters' `excludes`).
'use strict';
exports.EXCLUSIONS = [];
