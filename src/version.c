/* version.c - what the library says about itself: its version, and the
 * text of the errors it returns. */
#include "config.h"
#include "aiometer.h"

#include <string.h>

const char *aiometer_version_string(void)
{
    return PACKAGE_VERSION;
}

unsigned aiometer_version(void)
{
    return AIOMETER_VERSION_NUMBER;
}

const char *aiometer_strerror(int err)
{
    if (err == AIOMETER_DONE)
        return "No more results";
    if (err == 0)
        return "Success";
    /* strerror() is not required to be thread-safe, but glibc's and musl's
     * are for the values they know, which are the only ones we return. */
    return strerror(err);
}
