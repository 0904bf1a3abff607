/*
 * MIG for the mock: product catalogues (which GPU and compute instance
 * profiles a GPU can be carved into), a GPU's MIG devices checked against its
 * catalogue, and run-time re-layouts by the `mig` control command.
 *
 * Called by node.c while loading the node description, by control.c for
 * `mig` lines and by nvml_mig.c for the GPU/compute instance queries. See
 * README.md ("MIG") for the JSON schema.
 */
#ifndef MOCK_NVML_MIG_H
#define MOCK_NVML_MIG_H

#include "json.h"
#include "loader.h"
#include "node.h"

#include <stddef.h>

/* The top-level "mig_catalogues" object (optional). */
int mock_mig_load_catalogues(loader *ld, const json_value *root, mock_node *node);

/* A GPU's "mig" and "mig_devices" keys, after its other keys are loaded. */
int mock_mig_load_gpu(loader *ld, const json_value *g, const char *where, mock_node *node, mock_gpu *gpu);

/*
 * A `mig` control command: set the GPU's current and pending MIG mode and
 * replace its MIG devices by those in the JSON file at layout_path (NULL or
 * "": none). Returns 0 and explains why in err when the command cannot apply;
 * the GPU is then unchanged.
 */
int mock_mig_relayout(mock_node *node, unsigned gpu, unsigned mode, unsigned pending, const char *layout_path,
                      char *err, size_t errlen);

#endif
