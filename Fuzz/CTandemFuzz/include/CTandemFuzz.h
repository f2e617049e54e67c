#ifndef C_TANDEM_FUZZ_H
#define C_TANDEM_FUZZ_H
#include <stddef.h>
#include <stdint.h>

// libFuzzer's entry for programs with their own main (LLVM 13 and later): runs the fuzzing loop
// with `callback` as the target, reading libFuzzer's flags from argc/argv.
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));

#endif
