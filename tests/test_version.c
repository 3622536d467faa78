/* test_version.c -- the version macros agree with each other and with the library. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "tapegrad.h"

Test(version, library_matches_header) { cr_assert_str_eq(tg_version(), TG_VERSION_STRING); }

Test(version, string_is_major_minor_patch) {
    char expect[32];
    snprintf(expect, sizeof expect, "%d.%d.%d", TG_VERSION_MAJOR, TG_VERSION_MINOR,
             TG_VERSION_PATCH);
    cr_assert_str_eq(TG_VERSION_STRING, expect);
    cr_assert_eq(TG_VERSION_NUMBER,
                 TG_VERSION_MAJOR * 10000 + TG_VERSION_MINOR * 100 + TG_VERSION_PATCH);
}
