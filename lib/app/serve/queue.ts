// queue.ts — the FIFO that runs `llava serve`'s completions one at a time (one model, one device), with the
// counts /health and the server state report.

/** FIFO of async jobs, one at a time; a failed job does not stop the ones behind it. */
export class SerialQueue {
  private tail: Promise<void> = Promise.resolve();
  running = 0;
  waiting = 0;
  /** Highest number of jobs ever running at once (1 by construction; the tests check it). */
  maxRunning = 0;

  run<T>(job: () => Promise<T>): Promise<T> {
    this.waiting++;
    const p = this.tail.then(async () => {
      this.waiting--;
      this.running++;
      this.maxRunning = Math.max(this.maxRunning, this.running);
      try {
        return await job();
      } finally {
        this.running--;
      }
    });
    this.tail = p.then(
      () => undefined,
      () => undefined,
    );
    return p;
  }

  /** Resolves once every job queued so far has finished. */
  idle(): Promise<void> {
    return this.tail;
  }
}
