/* base_duration_test.c - Go duration syntax. */
#include <math.h>

#include "base/duration.h"
#include "testlib.h"

static void test_valid(void)
{
    static const struct {
        const char *text;
        double want;
    } cases[] = {{"0", 0},       {"3s", 3},      {"300ms", 0.3}, {"1.5h", 5400},
                 {"2h45m", 9900}, {"10us", 1e-5}, {"1m30s", 90},  {"250ns", 2.5e-7}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        double v = -1;
        es_error e;
        CHECK_MSG(duration_parse(cases[i].text, &v, &e) == 0, "%s", cases[i].text);
        CHECK_MSG(fabs(v - cases[i].want) < 1e-12, "%s -> %g", cases[i].text, v);
    }
}

static void test_invalid(void)
{
    const char *bad[] = {"", "3", "s", "-1s", "1x", "1.2.3s", "abc", "5 s", "1e30h", "2562048h"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        double v;
        es_error e = {0};
        CHECK_MSG(duration_parse(bad[i], &v, &e) == -1, "\"%s\" accepted", bad[i]);
        CHECK(e.msg[0] != '\0');
    }
}

int main(int argc, char **argv)
{
    (void)argc;
    TEST_BEGIN(argv[0]);
    RUN(test_valid);
    RUN(test_invalid);
    return TEST_EXIT();
}
