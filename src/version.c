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
#ifdef HAVE_STRERRORDESC_NP
    /* Not strerror(): for a value glibc does not know it writes "Unknown
     * error N" into a buffer of the thread's that its next call frees, and a
     * job may fail with a value of the program's own (aiometer_fail), so a
     * message handed out earlier would change or be freed under its
     * reader.  strerrordesc_np() only ever returns static text. */
    const char *m = strerrordesc_np(err);

    return m ? m : "Unknown error";
#else
    /* musl's strerror() returns static text for every value, unknown ones
     * included. */
    return strerror(err);
#endif
}
