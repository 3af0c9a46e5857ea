/* yaml_wipe.h - zeroes what libyaml copied out of a file that holds keys, before libyaml frees
 * it (libyaml frees without wiping and takes no custom allocator).
 *
 * Covered: scalar values of events and document nodes, the parser's working and raw input
 * buffers. Not covered: fragments libyaml's scanner left behind when it grew a scalar's buffer
 * (realloc); those are partial copies in freed heap, a known limit of libyaml.
 * Call the wipe right before the matching yaml_*_delete.
 */
#ifndef ETCDSEAL_POLICY_YAML_WIPE_H
#define ETCDSEAL_POLICY_YAML_WIPE_H

#include <yaml.h>

void yaml_wipe_event(yaml_event_t *ev);
void yaml_wipe_document(yaml_document_t *doc);
void yaml_wipe_parser(yaml_parser_t *parser);

#endif
