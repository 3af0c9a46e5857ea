/* yaml_wipe.c - see yaml_wipe.h. */
#include "policy/yaml_wipe.h"

#include <sodium.h>

void yaml_wipe_event(yaml_event_t *ev)
{
    if (ev->type == YAML_SCALAR_EVENT && ev->data.scalar.value)
        sodium_memzero(ev->data.scalar.value, ev->data.scalar.length);
}

void yaml_wipe_document(yaml_document_t *doc)
{
    for (yaml_node_t *n = doc->nodes.start; n && n < doc->nodes.top; n++)
        if (n->type == YAML_SCALAR_NODE && n->data.scalar.value)
            sodium_memzero(n->data.scalar.value, n->data.scalar.length);
}

void yaml_wipe_parser(yaml_parser_t *parser)
{
    if (parser->buffer.start && parser->buffer.end > parser->buffer.start)
        sodium_memzero(parser->buffer.start,
                       (size_t)(parser->buffer.end - parser->buffer.start));
    if (parser->raw_buffer.start && parser->raw_buffer.end > parser->raw_buffer.start)
        sodium_memzero(parser->raw_buffer.start,
                       (size_t)(parser->raw_buffer.end - parser->raw_buffer.start));
}
