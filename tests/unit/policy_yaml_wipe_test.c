/* policy_yaml_wipe_test.c - what libyaml copied out of a key file is zeroed before it is freed:
 * scalar events, document scalar nodes, the parser's input buffers. */
#include <stdbool.h>
#include <string.h>

#include "policy/yaml_wipe.h"
#include "testlib.h"

static const char doc_text[] = "keys:\n  - secret: c2VjcmV0LWtleS1ieXRlcy0xMjM0NTY3ODkwYWJjZA==\n";
static const char secret[] = "c2VjcmV0LWtleS1ieXRlcy0xMjM0NTY3ODkwYWJjZA==";

static bool all_zero(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

static void test_event_scalars_wiped(void)
{
    yaml_parser_t parser;
    CHECK(yaml_parser_initialize(&parser));
    yaml_parser_set_input_string(&parser, (const unsigned char *)doc_text, strlen(doc_text));
    int seen = 0;
    for (int i = 0; i < 64; i++) {
        yaml_event_t ev;
        CHECK(yaml_parser_parse(&parser, &ev));
        if (ev.type == YAML_SCALAR_EVENT && ev.data.scalar.length == strlen(secret) &&
            memcmp(ev.data.scalar.value, secret, strlen(secret)) == 0) {
            seen++;
            yaml_wipe_event(&ev);
            CHECK(all_zero(ev.data.scalar.value, ev.data.scalar.length));
        }
        bool end = ev.type == YAML_STREAM_END_EVENT;
        yaml_event_delete(&ev);
        if (end)
            break;
    }
    CHECK_EQ_INT(seen, 1);
    /* the working buffer held the decoded input, secret included */
    size_t blen = (size_t)(parser.buffer.end - parser.buffer.start);
    CHECK(blen > 0);
    yaml_wipe_parser(&parser);
    CHECK(all_zero(parser.buffer.start, blen));
    yaml_parser_delete(&parser);
}

static void test_document_scalars_wiped(void)
{
    yaml_parser_t parser;
    yaml_document_t doc;
    CHECK(yaml_parser_initialize(&parser));
    yaml_parser_set_input_string(&parser, (const unsigned char *)doc_text, strlen(doc_text));
    CHECK(yaml_parser_load(&parser, &doc));
    int found = 0;
    for (yaml_node_t *n = doc.nodes.start; n < doc.nodes.top; n++)
        if (n->type == YAML_SCALAR_NODE && n->data.scalar.length == strlen(secret) &&
            memcmp(n->data.scalar.value, secret, strlen(secret)) == 0)
            found++;
    CHECK_EQ_INT(found, 1);
    yaml_wipe_document(&doc);
    for (yaml_node_t *n = doc.nodes.start; n < doc.nodes.top; n++)
        if (n->type == YAML_SCALAR_NODE)
            CHECK(all_zero(n->data.scalar.value, n->data.scalar.length));
    yaml_document_delete(&doc);
    yaml_wipe_parser(&parser);
    yaml_parser_delete(&parser);
}

int main(int argc, char **argv)
{
    (void)argc;
    TEST_BEGIN(argv[0]);
    RUN(test_event_scalars_wiped);
    RUN(test_document_scalars_wiped);
    return TEST_EXIT();
}
