/* tests.h: the list of unit tests (X-macro), shared by the runner and the test files. */
#ifndef CHRYS_TESTS_H
#define CHRYS_TESTS_H

#include "../harness.h"

#define TEST_LIST                                   \
    X(test_kernels_vs_scalar)                       \
    X(test_kernels_rows_vs_scalar)                  \
    X(test_kernels_forced_level)                    \
    X(test_kernels_dot_block)                       \
    X(test_kernels_score_scan)                      \
    X(test_kernels_keys_top)                        \
    X(test_search_fused_near_ties)                  \
    X(test_kernels_scale_and_code)                  \
    X(test_hnsw_recall_vs_exact)                    \
    X(test_hnsw_sq8_memory_and_get)                 \
    X(test_hnsw_update_delete_recall)               \
    X(test_hnsw_remove_all)                         \
    X(test_hnsw_filter_and_threshold)               \
    X(test_hnsw_parallel_build_and_concurrent_search) \
    X(test_hnsw_store)                              \
    X(test_hnsw_bad_input)                          \
    X(test_hnsw_golden_v1_1)                        \
    X(test_regress_hnsw_build_bits)                 \
    X(test_flat_sq8_storage_and_compat)             \
    X(test_hnsw_open_mmap)                          \
    X(test_regress_hnsw_review)                     \
    X(test_kernels_u8i8)                            \
    X(test_kernels_x4)                              \
    X(test_kernels_screen_dots)                     \
    X(test_kernels_screen_mask)                     \
    X(test_kernels_sumsq)                           \
    X(test_crc32c)                                  \
    X(test_api_struct_size_outputs)                 \
    X(test_api_struct_size_index_opts)              \
    X(test_api_struct_size_search_opts)             \
    X(test_api_struct_size_merge_and_embed_opts)    \
    X(test_api_get_ids_capacity)                    \
    X(test_api_merge_history_runs)                  \
    X(test_api_buffer_roundtrip_and_damage)         \
    X(test_index_exact_all_paths)                   \
    X(test_index_ties_break_by_id)                  \
    X(test_index_threshold)                         \
    X(test_index_mutation)                          \
    X(test_index_bad_input)                         \
    X(test_index_concurrent_search)                 \
    X(test_parallel_pool_concurrent)                \
    X(test_index_near_ties_exact)                   \
    X(test_index_score_exact)                       \
    X(test_search_flat_paths_agree)                 \
    X(test_search_failure_messages)                 \
    X(test_regress_rerank_band_ip_large_norms)      \
    X(test_topk_key_order)                          \
    X(test_search_chunked_threads_agree)            \
    X(test_store_roundtrip_and_determinism)         \
    X(test_store_golden_v1)                         \
    X(test_store_every_truncation_and_bitflip)      \
    X(test_store_sq8_section_tags_on_disk)          \
    X(test_store_save_buffer)                       \
    X(test_store_hostile_headers)                   \
    X(test_store_rows_checksum_split)               \
    X(test_store_row_check_edges)                   \
    X(test_store_mmap_check_on_use_concurrent)      \
    X(test_store_mmap_ids_in_place)                 \
    X(test_store_mmap_resident)                     \
    X(test_store_failed_save_keeps_old_file)        \
    X(test_io_fvecs)                                \
    X(test_io_raw_and_npy)                          \
    X(test_io_jsonl)                                \
    X(test_io_vstream)                              \
    X(test_alloc_index_calls)                       \
    X(test_alloc_save_load)                         \
    X(test_alloc_merger)                            \
    X(test_alloc_grow_cap)                          \
    X(test_alloc_aligned_blocks)                    \
    X(test_merge_opts_older_struct)                 \
    X(test_merge_golden_passes)                     \
    X(test_merge_golden_per_legend)                 \
    X(test_merge_batch_equals_sequential)           \
    X(test_merge_persistence_and_continuation)      \
    X(test_merge_bad_records)                       \
    X(test_merge_semantics_details)                 \
    X(test_merge_index_backed)                      \
    X(test_merge_hnsw_scale)                        \
    X(test_merge_default_is_exact)                  \
    X(test_merge_unit_append_same_row) \
    X(test_merge_screen_exact_topk)                 \
    X(test_merge_prefix_bound)                      \
    X(test_merge_screen_same_merge)                  \
    X(test_merge_hnsw_continuation)                 \
    X(test_merge_hnsw_index_current)                \
    X(test_merge_index_unlinked_rows)               \
    X(test_embed_deterministic_chrysalis_rows)      \
    X(test_sha256)                                  \
    X(test_embed_cache_incremental)                 \
    X(test_embed_cache_two_processes)               \
    X(test_embed_http_providers)                    \
    X(test_embed_http_concurrency)                  \
    X(test_embed_reply_fast)                        \
    X(test_ivf_spec_parse)                          \
    X(test_ivf_spec_parse_struct_size)              \
    X(test_ivf_spec_with_sq8)                       \
    X(test_ivf_caps_agree)                          \
    X(test_ivf_planner_policy)                      \
    X(test_kmeans_basics)                           \
    X(test_kmeans_many_centroids_seed_by_density)   \
    X(test_ivf_recall_and_mutation)                 \
    X(test_ivf_planner)                             \
    X(test_search_filter)                           \
    X(test_lock_nowait_from_forked_child)           \
    X(test_lock_killed_holder_leaves_no_stale_lock) \
    X(test_lock_save_while_held_no_deadlock)        \
    X(test_lock_removes_temporaries_of_killed_writer) \
    X(test_lock_read_modify_write_processes)        \
    X(test_lock_bad_arguments)                      \
    X(test_ivf_roadmap_names)                       \
    X(test_ivf_sq8_codes_only)                      \
    X(test_ivf_sq8_rflat_exact)                     \
    X(test_ivf_golden_v1_0_sq8)                     \
    X(test_regress_ivf_store_fewer_rows_than_lists) \
    X(test_ivf_concurrent_search_every_kind)        \
    X(test_ivf_concurrent_kmeans)                   \
    X(test_merge_concurrent_batch_two_threads)     \
    X(test_error_info_index_add)                    \
    X(test_error_info_merger)                       \
    X(test_error_info_embedder)

/* test_store.c: a golden file's header restamped with this library's writer version */
uint32_t h_restamp_writer_version(unsigned char *b, size_t len);
/* test_index.c: the float64 oracle of a (query, row) score under each metric */
double h_oracle_score(int metric, const float *q, const float *x, size_t d);

#define X(name) void name(void);
TEST_LIST
#undef X

extern const test_case all_tests[];

#endif
