// cuda.ts — questions about the CUDA device: is it there, what is it, wait for it.
import { native } from './native';

/** Whether this build has CUDA and a usable GPU is present. */
export function isAvailable(): boolean {
  return native.deviceInfo(1).available;
}
/** The GPU's name, or the reason CUDA is unavailable. */
export function describe(): string {
  return native.deviceInfo(1).description;
}
/** Block until queued GPU work has finished (readbacks already do this). */
export function synchronize(): void {
  if (isAvailable()) native.synchronize(1);
}
