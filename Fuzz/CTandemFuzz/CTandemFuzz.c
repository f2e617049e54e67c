#include "CTandemFuzz.h"

// AddressSanitizer's defaults for tandem-fuzz. No leak checking: Swift's globals, initialized
// once on first use, look leaked to it, and a leak is not what these targets look for.
const char *__asan_default_options(void) { return "detect_leaks=0"; }
