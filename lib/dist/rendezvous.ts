// rendezvous.ts — hands rank 0's NCCL unique id (128 bytes) to every other rank over TCP, for launchers
// that give no MPI world (torchrun-style MASTER_ADDR:MASTER_PORT). Rank 0 listens, each other rank
// connects (retrying until the deadline: rank 0 may start later), sends its rank as 4 bytes and reads the
// id; rank 0 closes once world-1 distinct ranks were served. Under mpirun the id goes through MPI's
// broadcast instead (process_group.ts).
import * as net from 'net';

export interface RendezvousOptions {
  rank: number;
  worldSize: number;
  addr: string;
  port: number;
  /** Rank 0's payload; other ranks pass null and receive it. */
  payload: Buffer | null;
  timeoutS: number;
}

/** Returns the payload on every rank. */
export function exchangeId(o: RendezvousOptions): Promise<Buffer> {
  if (o.rank === 0) return serve(o);
  return fetchId(o);
}

function serve(o: RendezvousOptions): Promise<Buffer> {
  const payload = o.payload;
  if (!payload) return Promise.reject(new Error('[dist] rendezvous: rank 0 needs the id to hand out'));
  if (o.worldSize === 1) return Promise.resolve(payload);
  return new Promise((resolve, reject) => {
    const served = new Set<number>();
    const server = net.createServer((sock) => {
      let got = Buffer.alloc(0);
      sock.on('data', (d) => {
        got = Buffer.concat([got, d]);
        if (got.length < 4) return;
        const r = got.readUInt32BE(0);
        if (r < 1 || r >= o.worldSize) {
          sock.destroy();
          return;
        }
        sock.end(payload);
        served.add(r);
        if (served.size === o.worldSize - 1) finish(null);
      });
      sock.on('error', () => undefined);
    });
    const timer = setTimeout(
      () => finish(new Error(`[dist] rendezvous at ${o.addr}:${o.port}: only ${served.size} of ${o.worldSize - 1} ranks connected within ${o.timeoutS} s`)),
      o.timeoutS * 1000,
    );
    const finish = (e: Error | null): void => {
      clearTimeout(timer);
      server.close();
      if (e) reject(e);
      else resolve(payload);
    };
    server.on('error', (e) => finish(new Error(`[dist] rendezvous: rank 0 cannot listen on ${o.addr}:${o.port}: ${e.message}`)));
    server.listen(o.port, o.addr);
  });
}

function fetchId(o: RendezvousOptions): Promise<Buffer> {
  const deadline = Date.now() + o.timeoutS * 1000;
  return new Promise((resolve, reject) => {
    const attempt = (): void => {
      let got = Buffer.alloc(0);
      const sock = net.connect(o.port, o.addr, () => {
        const b = Buffer.alloc(4);
        b.writeUInt32BE(o.rank, 0);
        sock.write(b);
      });
      sock.on('data', (d) => (got = Buffer.concat([got, d])));
      sock.on('end', () => (got.length ? resolve(got) : retry(new Error('closed without an id'))));
      sock.on('error', (e) => retry(e));
    };
    const retry = (e: Error): void => {
      if (Date.now() > deadline) reject(new Error(`[dist] rendezvous: rank ${o.rank} could not reach rank 0 at ${o.addr}:${o.port} within ${o.timeoutS} s (${e.message})`));
      else setTimeout(attempt, 100);
    };
    attempt();
  });
}
