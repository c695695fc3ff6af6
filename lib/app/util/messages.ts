// messages.ts — the one-line error a command prints: `<prog> <command>: error: <message>`.
//
// Errors thrown by the application start with their area, `[chat] image file x.png not found`. When that
// area is the command itself the line would say it twice (`llava chat: error: [chat] ...`), so a leading
// `[command] ` or `command: ` is dropped; any other area stays, because it says where the fault is
// (`llava train: error: [data] train.json: malformed JSON at line 3, column 5 (...)`).
// Used by the CLI's action wrapper (cli/util.ts runAction) and by `npm start` (train/demo.ts).

/** The message without a leading `[command] ` or `command: ` that repeats the command's name. */
export function stripCommandPrefix(command: string, message: string): string {
  const names = [command, ...command.split(' ')];
  for (const n of names) {
    if (message.startsWith(`[${n}] `)) return message.slice(n.length + 3);
    if (message.startsWith(`${n}: `)) return message.slice(n.length + 2);
  }
  return message;
}

/** `<prog> <command>: error: <message>` (prog and command joined by a space; either may be empty). */
export function commandErrorLine(prog: string, command: string, message: string): string {
  const who = [prog, command].filter(Boolean).join(' ');
  return `${who}: error: ${stripCommandPrefix(command, message)}`;
}
