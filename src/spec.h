/*
 * spec.h: index specifications (spec.c), private to the library.
 */
#ifndef CHRYS_SPEC_H
#define CHRYS_SPEC_H

#include "index.h"

/* chrys_index_spec_parse into a full struct (struct_size ignored, set to sizeof). */
CHRYS_PRIVATE int index_spec_parse(const char *spec, chrys_index_spec *out, char **errmsg);
/* The spec of ix as it is now ("IVF64,SQ8", "HNSW16,SQ8,RFlat", "Flat", ...), for every kind. */
CHRYS_PRIVATE void index_spec_string(const chrys_index *ix, char *buf, size_t cap);

#endif
