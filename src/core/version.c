/* version.c -- the library's version at run time, fixed when the library is compiled. */
#include "engine.h"

/* The macro is expanded here, inside the library, so a program asking tg_version() learns which
 * library it is running against, not which header it was compiled with. */
const char *tg_version(void) { return TG_VERSION_STRING; }
