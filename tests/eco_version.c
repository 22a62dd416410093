/* The version the header was generated with (AIOMETER_VERSION_* macros) and
 * the one the library reports at run time must be one and the same; both come
 * from configure.ac.  Prints the version for tests/eco_version.sh, which
 * compares it with aiometer.pc and the soname.  Exit status 1 on a mismatch. */
#include <aiometer.h>

#include <stdio.h>
#include <string.h>

static int failures;

static void check(int ok, const char *what)
{
    if (!ok) {
        printf("FAIL: %s\n", what);
        failures++;
    }
}

int main(void)
{
    char from_parts[64];
    unsigned number = AIOMETER_VERSION_NUMBER;

    /* Each part must fit its byte of AIOMETER_VERSION_NUMBER, or versions
     * would stop comparing the way numbers do. */
    check(AIOMETER_VERSION_MAJOR >= 0 && AIOMETER_VERSION_MAJOR <= 255 &&
              AIOMETER_VERSION_MINOR >= 0 && AIOMETER_VERSION_MINOR <= 255 &&
              AIOMETER_VERSION_PATCH >= 0 && AIOMETER_VERSION_PATCH <= 255,
          "each AIOMETER_VERSION_ part is from 0 to 255");
    check(number == ((unsigned)AIOMETER_VERSION_MAJOR << 16 |
                     (unsigned)AIOMETER_VERSION_MINOR << 8 | (unsigned)AIOMETER_VERSION_PATCH),
          "AIOMETER_VERSION_NUMBER is made of MAJOR, MINOR and PATCH");
    snprintf(from_parts, sizeof from_parts, "%d.%d.%d", AIOMETER_VERSION_MAJOR,
             AIOMETER_VERSION_MINOR, AIOMETER_VERSION_PATCH);
    check(strcmp(from_parts, AIOMETER_VERSION_STRING) == 0,
          "AIOMETER_VERSION_STRING is MAJOR.MINOR.PATCH");
    check(aiometer_version() == number, "aiometer_version() == AIOMETER_VERSION_NUMBER");
    check(aiometer_version_string() != NULL &&
              strcmp(aiometer_version_string(), AIOMETER_VERSION_STRING) == 0,
          "aiometer_version_string() == AIOMETER_VERSION_STRING");
    /* The pointer is to a static string: the same on every call. */
    check(aiometer_version_string() == aiometer_version_string(),
          "aiometer_version_string() returns the same static string");

    printf("header %s (0x%06x), library %s (0x%06x)\n", AIOMETER_VERSION_STRING, number,
           aiometer_version_string() ? aiometer_version_string() : "(null)",
           aiometer_version());
    printf("version=%s\n", AIOMETER_VERSION_STRING);
    return failures ? 1 : 0;
}
