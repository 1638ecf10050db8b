/*
 * format.h: on-disk constants of the single-file store. docs/FORMAT.md is the specification;
 * this file and that one change together.
 *
 * History of format versions:
 *   1.0  header, section table, META, IDS_, NORM, VF32, optional MDAT; merger state in
 *        MRGO, MENT, MASN, MHIS; index plan and IVF/SQ8 in PLAN, IVFC, IVFL, SQ8P, VSQ8
 *        (this library 0.1.0).
 *   1.1  kind 2 (HNSW) with HNSW, HNLV, HNL0, HNUP; tombstones as id UINT64_MAX in IDS_;
 *        PLAN flag bit 2; VF32 empty for an SQ8-only HNSW index. A 1.0 reader rejects these
 *        files by their unknown required sections; 1.0 files read unchanged.
 */
#ifndef CHRYS_FORMAT_H
#define CHRYS_FORMAT_H

#include <stdint.h>

#define STORE_MAGIC "\x89" "CHRY\r\n\x1a"
#define STORE_MAGIC_LEN 8
#define STORE_FORMAT_MAJOR 1
#define STORE_FORMAT_MINOR 2
#define STORE_HEADER_SIZE 64
#define STORE_ENTRY_SIZE 32
#define STORE_ALIGN 64
#define STORE_MAX_SECTIONS 64

/* Header field offsets */
#define HDR_MAGIC 0
#define HDR_MAJOR 8
#define HDR_MINOR 10
#define HDR_COMPAT 12
#define HDR_RO_COMPAT 16
#define HDR_INCOMPAT 20
#define HDR_N_SECTIONS 24
#define HDR_TABLE_CRC 28
#define HDR_TABLE_OFFSET 32
#define HDR_FILE_LENGTH 40
#define HDR_WRITER_VERSION 48
#define HDR_RESERVED 52 /* 8 bytes, zero */
#define HDR_CRC 60

/* Known feature bits (none yet). */
#define STORE_INCOMPAT_KNOWN 0u
#define STORE_RO_COMPAT_KNOWN 0u

/* Section flags */
#define SEC_OPTIONAL 1u
#define SEC_FLAGS_KNOWN SEC_OPTIONAL

#define FOURCC(a, b, c, d) \
    ((uint32_t)(a) | ((uint32_t)(b) << 8) | ((uint32_t)(c) << 16) | ((uint32_t)(d) << 24))
#define TAG_META FOURCC('M', 'E', 'T', 'A')
#define TAG_IDS FOURCC('I', 'D', 'S', '_')
#define TAG_NORM FOURCC('N', 'O', 'R', 'M')
#define TAG_VF32 FOURCC('V', 'F', '3', '2')
#define TAG_MDAT FOURCC('M', 'D', 'A', 'T')
#define TAG_PLAN FOURCC('P', 'L', 'A', 'N') /* index spec, planner settings and reason */
#define TAG_IVFC FOURCC('I', 'V', 'F', 'C') /* IVF centroids */
#define TAG_IVFL FOURCC('I', 'V', 'F', 'L') /* IVF: list of each row (u32) */
#define TAG_SQ8P FOURCC('S', 'Q', '8', 'P') /* SQ8: per-dimension min (f32 each) */
/* SQ8: per-dimension step (f32 each). Its tag was written as TAG_SQ8P + 1 by format 1.2, which adds
 * one to the first byte: 'TQ8P' on disk. Kept so every store written since still loads. */
#define TAG_TQ8P FOURCC('T', 'Q', '8', 'P')
_Static_assert(TAG_TQ8P == TAG_SQ8P + 1, "the SQ8 step section's tag on disk");
#define TAG_VSQ8 FOURCC('V', 'S', 'Q', '8') /* SQ8: codes, dim bytes per row */
#define TAG_MRGO FOURCC('M', 'R', 'G', 'O') /* merger options and counters */
#define TAG_MENT FOURCC('M', 'E', 'N', 'T') /* merger: per-entry bookkeeping */
#define TAG_MASN FOURCC('M', 'A', 'S', 'N') /* merger: record id -> entry */
#define TAG_MHIS FOURCC('M', 'H', 'I', 'S') /* merger: history of runs */
#define TAG_HNSW FOURCC('H', 'N', 'S', 'W') /* HNSW: parameters and entry point (64 bytes) */
#define TAG_HNLV FOURCC('H', 'N', 'L', 'V') /* HNSW: level of each node (u8) */
#define TAG_HNL0 FOURCC('H', 'N', 'L', '0') /* HNSW: level-0 links, (1 + M0) u32 per node */
#define TAG_HNUP FOURCC('H', 'N', 'U', 'P') /* HNSW: upper links, level x (1 + M) u32 per node */

/* PLAN payload (256 bytes) */
#define PLAN_SIZE 256
#define PLAN_FLAGS 0          /* u32: bit 0 planned ("auto"), bit 1 SQ8, bit 2 float32 rows kept with SQ8 (HNSW) */
#define PLAN_NLIST 4          /* u32: lists when trained (0: untrained) */
#define PLAN_WANT_NLIST 8     /* u32: nlist from the spec */
#define PLAN_RESERVED0 12     /* u32, zero */
#define PLAN_THRESHOLD 16     /* u64: planner threshold */
#define PLAN_BUDGET 24        /* u64: memory budget */
#define PLAN_TRAINED_ON 32    /* u64 */
#define PLAN_TRAIN_IMBAL 40   /* f64 */
#define PLAN_REASON 48        /* 160 bytes, NUL-padded text */
#define PLAN_RESERVED1 208    /* 48 bytes, zero */
#define PLAN_FLAGS_KNOWN 7u

/* MRGO payload (128 bytes) */
#define MRGO_SIZE 128
#define MRGO_THRESHOLD 0   /* f64 */
#define MRGO_W_OLD 8       /* f64 */
#define MRGO_W_NEW 16      /* f64 */
#define MRGO_VARIANT 24    /* u32: 0 embedding, 1 skill */
#define MRGO_FLAGS 28      /* u32: bit 0 renormalise, bit 1 mean update */
#define MRGO_RECORDS 32    /* u64 */
#define MRGO_MERGED 40     /* u64 */
#define MRGO_ADDED 48      /* u64 */
#define MRGO_SKIPPED 56    /* u64 */
#define MRGO_RESERVED 64   /* 64 bytes, zero */
#define MRGO_FLAGS_KNOWN 3u
#define MENT_SIZE 24       /* merged_count u32, reserved u32 (0), similarity f64, first_record u64 */
#define MASN_SIZE 16       /* record id u64, entry u64 */
#define MHIS_SIZE 48       /* unix time, records, merged, added, skipped, reserved (0): u64 each */

/* META payload (64 bytes) */
#define META_SIZE 64
#define META_DIM 0
#define META_METRIC 4
#define META_KIND 8
#define META_RESERVED0 12 /* u32, zero */
#define META_COUNT 16
#define META_SEED 24
#define META_RESERVED1 32 /* 32 bytes, zero */

#endif
