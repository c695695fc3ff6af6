// common.ts — what every step of the GPT-assisted data pipeline shares: its error class (messages read
// `[gen-data] ...`) and the parser of a data-type name as users write it.
import { GPT_DATA_TYPES, type GptDataType } from './prompts';

/** Errors in the caller's input (files, options); the CLI prints them as one line. The `[gen-data] `
 *  prefix is added here unless the message already carries it (as the JSON reader's messages do). */
export class GptDataError extends Error {
  constructor(message: string) {
    super(message.startsWith('[gen-data] ') ? message : `[gen-data] ${message}`);
    this.name = 'GptDataError';
  }
}

/** Accepts the type names and the reference folder names ('detail_description'). */
export function parseDataType(s: string): GptDataType {
  const t = s.trim().toLowerCase().replace(/-/g, '_');
  if (t === 'detail_description') return 'detail';
  if ((GPT_DATA_TYPES as readonly string[]).includes(t)) return t as GptDataType;
  throw new GptDataError(`unknown data type '${s}' (${GPT_DATA_TYPES.join(', ')})`);
}
