#pragma once
// Ctrl-C (SIGINT) and SIGTERM as a flag that long-running work polls, so it can stop cleanly: a
// merge removes its temporary output, a chat stops the current answer. The flag is process-wide
// because a signal handler can reach nothing else.
namespace vlmforge {

// Installs the handler; after it, SIGINT/SIGTERM set the flag instead of killing the process.
void catch_interrupts();
// Whether an interrupt arrived since the last clear_interrupt().
bool interrupted();
void clear_interrupt();

}  // namespace vlmforge
