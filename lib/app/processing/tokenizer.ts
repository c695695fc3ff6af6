// LLaMA-style tokenizer for LLaVA: a thin wrapper over @huggingface/tokenizers (pure JS) loaded from a
// Hugging Face `tokenizer.json` + `tokenizer_config.json`.
//
// Decisions:
// - The library reproduces the Rust `tokenizers` pipeline used to make the fixtures (metaspace normalizer
//   Prepend + Replace, BPE with byte fallback, TemplateProcessing adding <s>, decoder Replace/ByteFallback/
//   Fuse/Strip): every reference case matched as-is, so no sentencepiece fix-ups live here. Notably the
//   dummy-prefix '▁' is added per text segment between added tokens, so "<image>\nX" yields '▁', '<0x0A>'
//   after the image token, which LLaVA's chunk-wise tokenization (docs/reference.md §1.5) relies on.
// - Edge cases handled here: decode([]) returns '' as Rust does (the library throws); an id outside the
//   vocabulary is an Error (Rust silently drops it, which would hide an off-by-one in a sampler).
// - bos/eos/unk/pad ids come from tokenizer_config.json token strings (which may be plain strings or
//   AddedToken objects {content: ...}); an unset pad_token gives padId undefined, as in transformers.
// - encode() follows add_bos_token / add_eos_token of the config when addSpecialTokens is true, as
//   transformers does (LlamaTokenizerFast rebuilds its post-processor from those flags); a config without
//   either flag falls back to tokenizer.json's own post-processor.
// - decode() never applies clean_up_tokenization_spaces (the library defaults it to true, which would turn
//   " ." into "."); the reference decode is the Rust default, which does not clean up.
import * as fs from 'fs';
import * as path from 'path';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { readJson } from '../../io/json';
import { checkOptions, optionKeys } from '../../options';

interface TokenizerConfig {
  add_bos_token?: boolean;
  add_eos_token?: boolean;
  bos_token?: string | { content: string } | null;
  eos_token?: string | { content: string } | null;
  unk_token?: string | { content: string } | null;
  pad_token?: string | { content: string } | null;
  model_max_length?: number;
  [key: string]: unknown;
}

/** Options of `Tokenizer.encode` and `tokenize`. */
export interface EncodeOptions {
  /** Add <s> in front (and </s> if the config says so); default true for encode, false for tokenize. */
  addSpecialTokens?: boolean;
}
/** Options of `Tokenizer.decode`. */
export interface DecodeOptions {
  /** Drop special tokens (<s>, </s>, <image>, <pad>, ...); default true. */
  skipSpecialTokens?: boolean;
}
const ENCODE_KEYS = optionKeys<EncodeOptions>({ addSpecialTokens: true });
const DECODE_KEYS = optionKeys<DecodeOptions>({ skipSpecialTokens: true });

/** transformers' VERY_LARGE_INTEGER, used when model_max_length is absent. */
const HUGE_MAX_LENGTH = 1e30;

function tokenString(v: TokenizerConfig['bos_token']): string | undefined {
  if (v === null || v === undefined) return undefined;
  return typeof v === 'string' ? v : v.content;
}

export class Tokenizer {
  readonly bosId: number | undefined;
  readonly eosId: number | undefined;
  readonly padId: number | undefined;
  readonly unkId: number | undefined;
  /** Number of ids, added tokens included (max id + 1), i.e. the embedding rows the model needs. */
  readonly vocabSize: number;
  readonly modelMaxLength: number;
  readonly addBos: boolean;
  readonly addEos: boolean;
  /** No add_bos_token/add_eos_token in the config: use tokenizer.json's post-processor instead. */
  private readonly useTemplate: boolean;
  private readonly tok: HfTokenizer;
  private readonly specialIds: Set<number>;

  constructor(tokenizerJson: Record<string, unknown>, config: TokenizerConfig = {}, source = 'tokenizer') {
    try {
      this.tok = new HfTokenizer(tokenizerJson, config);
    } catch (e) {
      throw new Error(`tokenizer: ${source}: cannot build tokenizer (${(e as Error).message})`);
    }
    const idOf = (field: 'bos_token' | 'eos_token' | 'unk_token' | 'pad_token'): number | undefined => {
      const s = tokenString(config[field]);
      if (s === undefined) return undefined;
      const id = this.tok.token_to_id(s);
      if (id === undefined) throw new Error(`tokenizer: ${source}: ${field} '${s}' is not in the vocabulary`);
      return id;
    };
    this.bosId = idOf('bos_token');
    this.eosId = idOf('eos_token');
    this.unkId = idOf('unk_token');
    this.padId = idOf('pad_token');
    this.useTemplate = config.add_bos_token === undefined && config.add_eos_token === undefined;
    this.addBos = !this.useTemplate && (config.add_bos_token ?? false);
    this.addEos = !this.useTemplate && (config.add_eos_token ?? false);
    if (this.addBos && this.bosId === undefined) throw new Error(`tokenizer: ${source}: add_bos_token is set but bos_token is not`);
    if (this.addEos && this.eosId === undefined) throw new Error(`tokenizer: ${source}: add_eos_token is set but eos_token is not`);
    let maxId = -1;
    for (const id of this.tok.get_vocab(true).values()) maxId = Math.max(maxId, id);
    this.vocabSize = maxId + 1;
    this.modelMaxLength = typeof config.model_max_length === 'number' ? config.model_max_length : HUGE_MAX_LENGTH;
    this.specialIds = new Set([...this.tok.get_added_tokens_decoder()].filter(([, t]) => t.special).map(([id]) => id));
  }

  /** Loads `tokenizer.json` and (optionally present) `tokenizer_config.json` from a model directory. */
  static fromDir(dir: string): Tokenizer {
    const tjPath = path.join(dir, 'tokenizer.json');
    if (!fs.existsSync(tjPath)) {
      throw new Error(`tokenizer: ${tjPath} not found (only the fast-tokenizer tokenizer.json format is supported)`);
    }
    const tokenizerJson = readJson<Record<string, unknown>>(tjPath, 'file', 'tokenizer', { object: true });
    const cfgPath = path.join(dir, 'tokenizer_config.json');
    const config = fs.existsSync(cfgPath) ? readJson<TokenizerConfig>(cfgPath, 'file', 'tokenizer', { object: true }) : {};
    return new Tokenizer(tokenizerJson, config, dir);
  }

  /** Text -> ids; with addSpecialTokens, <s> in front (and </s> at the end if the config says so). */
  encode(text: string, opts: EncodeOptions = {}): number[] {
    checkOptions('tokenizer.encode', opts, ENCODE_KEYS);
    if (typeof text !== 'string') throw new Error(`tokenizer: encode expects a string, got ${typeof text}`);
    const add = opts.addSpecialTokens ?? true;
    if (add && this.useTemplate) return this.tok.encode(text, { add_special_tokens: true }).ids;
    const ids = this.tok.encode(text, { add_special_tokens: false }).ids;
    if (add) {
      if (this.addBos) ids.unshift(this.bosId!);
      if (this.addEos) ids.push(this.eosId!);
    }
    return ids;
  }

  /** Text -> token strings (pieces such as '▁What', '<0x0A>'); no <s> unless addSpecialTokens. */
  tokenize(text: string, opts: EncodeOptions = {}): string[] {
    checkOptions('tokenizer.tokenize', opts, ENCODE_KEYS);
    return this.encode(text, { addSpecialTokens: opts.addSpecialTokens ?? false }).map((id) => this.idToToken(id));
  }

  /** Ids -> text, by the tokenizer.json decoder; special tokens (<s>, </s>, <image>, <pad>...) skipped by default. */
  decode(ids: readonly number[], opts: DecodeOptions = {}): string {
    checkOptions('tokenizer.decode', opts, DECODE_KEYS);
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
        throw new Error(`tokenizer: decode: id ${id} is outside the vocabulary (0..${this.vocabSize - 1})`);
      }
    }
    const skip = opts.skipSpecialTokens ?? true;
    const kept = skip ? ids.filter((id) => !this.specialIds.has(id)) : ids.slice();
    if (kept.length === 0) return ''; // the library throws on an empty list; Rust returns ''
    return this.tok.decode(kept, { skip_special_tokens: skip, clean_up_tokenization_spaces: false });
  }

  /** The token string of an id; throws for an id not in the vocabulary. */
  idToToken(id: number): string {
    const t = this.tok.id_to_token(id);
    if (t === undefined) throw new Error(`tokenizer: id ${id} is not in the vocabulary`);
    return t;
  }

  /** The id of a token string (added tokens included), or undefined if unknown. */
  tokenToId(token: string): number | undefined {
    return this.tok.token_to_id(token);
  }

  /** True for ids of special added tokens (<unk>, <s>, </s>, <image>, <pad> in LLaVA). */
  isSpecial(id: number): boolean {
    return this.specialIds.has(id);
  }
}
