#ifndef CHRYS_FUZZ_H
#define CHRYS_FUZZ_H
#include <stddef.h>
#include <stdint.h>
int fuzz_load_one(const uint8_t *data, size_t size);
int fuzz_jsonl_one(const uint8_t *data, size_t size);
int fuzz_fvecs_one(const uint8_t *data, size_t size);
int fuzz_hnsw_one(const uint8_t *data, size_t size);
#endif
