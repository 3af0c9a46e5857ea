/* harden.c - core dumps off and the process non-dumpable (see harden.h). */
#include "base/harden.h"

#include <errno.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>

int harden_process(es_error *err)
{
    int rc = 0;
    struct rlimit none = {0, 0};
    if (setrlimit(RLIMIT_CORE, &none) != 0)
        rc = es_error_set(err, errno, "setrlimit(RLIMIT_CORE, 0): %s", strerror(errno));
    /* also covers a core pattern piped to a helper, which RLIMIT_CORE 0 alone does not stop
     * for every kernel configuration */
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
        rc = es_error_set(err, errno, "prctl(PR_SET_DUMPABLE, 0): %s", strerror(errno));
    if (rc != 0)
        return rc;
    struct rlimit now;
    if (getrlimit(RLIMIT_CORE, &now) != 0 || now.rlim_cur != 0 || now.rlim_max != 0)
        return es_error_set(err, 0, "RLIMIT_CORE is still not 0 after setrlimit");
    if (prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != 0)
        return es_error_set(err, 0, "the process is still dumpable after PR_SET_DUMPABLE 0");
    return 0;
}
