// pytorch_read.ts — read speed of the PyTorch checkpoint reader (lib/io/pytorch.ts) and `convert`, on a file
// made by the real torch.save. One JSON line: open time, MB/s of contiguous reads, of a transposed view
// (gathered), and of convertToSafetensors. Make the input (151 MB) with Debian's python3 + torch:
//   /usr/bin/python3 -c "import torch,collections; torch.manual_seed(0); sd=collections.OrderedDict((f'layer{i}.weight', torch.randn(2048,2048)) for i in range(8)); sd['transposed']=torch.randn(2048,2048).t(); torch.save(sd,'/tmp/big_bench.bin')"
// then: npx tsx bench/pytorch_read.ts /tmp/big_bench.bin
import * as fs from 'fs';
import { openStateDict } from '../lib/io/state_dict';
import { convertToSafetensors } from '../lib/io/convert';

const file = process.argv[2] ?? '/tmp/big_bench.bin';
const ms = (t0: bigint): number => Number(process.hrtime.bigint() - t0) / 1e6;
let t0 = process.hrtime.bigint();
const sd = openStateDict(file);
const openMs = ms(t0);
let bytes = 0;
t0 = process.hrtime.bigint();
for (const n of sd.names()) if (n !== 'transposed') bytes += sd.read(n).data.byteLength;
const readMs = ms(t0);
t0 = process.hrtime.bigint();
const tb = sd.has('transposed') ? sd.read('transposed').data.byteLength : 0;
const tMs = ms(t0);
sd.close();
const out = `${file}.bench.safetensors`;
fs.rmSync(out, { force: true });
t0 = process.hrtime.bigint();
convertToSafetensors(file, out);
const cMs = ms(t0);
fs.rmSync(out, { force: true });
const mbps = (b: number, t: number): number => Math.round(b / 1e6 / (t / 1000));
console.log(
  JSON.stringify({
    case: 'pytorch_read',
    MB: Math.round((bytes + tb) / 1e6),
    open_ms: Number(openMs.toFixed(1)),
    contiguous_MBps: mbps(bytes, readMs),
    transposed_MBps: tb ? mbps(tb, tMs) : null,
    convert_MBps: mbps(bytes + tb, cMs),
  }),
);
