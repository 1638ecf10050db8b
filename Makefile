# chrysalis: libchrysalis (static + shared) and the chrysalis CLI.
#
#   make              release build in build/release
#   make test         build and run every test (unit at each SIMD level, CLI, fuzz replay)
#   make asan         the unit and CLI tests under ASan+UBSan (build/asan)
#   make fuzz         libFuzzer targets with clang (build/fuzz)
#   make bench        benchmark programs
#   make bench-report bench/REPORT.md and its plots (bench/report.sh; --full by hand)
#   make NATIVE=1     adds -march=native to non-kernel files (local benchmarking only)
#
# Every file gets baseline x86-64 flags; only src/kernels/*_avx2.c, *_avx512.c and *_sse42.c get
# ISA flags, so no AVX instruction can leak into code that runs before dispatch.

MODE    ?= release
BUILD   ?= build/$(MODE)
CC      ?= cc
WERROR  ?=
CSTD    := -std=c11 -D_GNU_SOURCE
WARN    := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wvla -Wno-missing-field-initializers $(WERROR)
INC     := -Iinclude -Isrc -I/usr/include/cjson -I/usr/include/x86_64-linux-gnu

ifeq ($(MODE),release)
  OPT := -O2 -g -DNDEBUG
else ifeq ($(MODE),debug)
  OPT := -O0 -g
else ifeq ($(MODE),asan)
  OPT := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
  LDSAN := -fsanitize=address,undefined
else ifeq ($(MODE),fuzz-lib)
  OPT := -O1 -g -fsanitize=fuzzer-no-link,address,undefined
else ifeq ($(MODE),tsan)
  OPT := -O1 -g -fsanitize=thread
  LDSAN := -fsanitize=thread
endif
ifeq ($(NATIVE),1)
  OPT += -march=native
endif

BLAS_CFLAGS := -DCHRYS_HAVE_BLAS -I/usr/include/x86_64-linux-gnu/openblas-pthread
BLAS_LIBS   := -lopenblas

CFLAGS_ALL := $(CSTD) $(WARN) $(OPT) $(INC) -fPIC -fvisibility=hidden -pthread $(BLAS_CFLAGS) $(CFLAGS)
# OpenBLAS, libcurl and SQLite are loaded at first use (src/dynlib.c), not linked; benchmarks
# that set OpenBLAS's threads themselves link it (LDLIBS_BENCH)
LDLIBS_ALL := $(LDSAN) -pthread -lcjson -ldl -lm $(LDLIBS)
LDLIBS_BENCH := $(LDLIBS_ALL) $(BLAS_LIBS)

# Every source in its folder (a new file needs no edit here): the library, the CLI's commands
# (cli/main.c and cli/cmd_*.c) and what they share with the tests and benchmarks (the rest of cli/).
LIB_SRC := $(wildcard src/*.c src/store/*.c src/kernels/*.c)
CLI_SRC := cli/main.c $(wildcard cli/cmd_*.c)
CLI_LIB_SRC := $(filter-out $(CLI_SRC),$(wildcard cli/*.c))
TEST_SRC := $(wildcard tests/unit/*.c)

LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/%.o)
CLI_LIB_OBJ := $(CLI_LIB_SRC:%.c=$(BUILD)/%.o)
CLI_OBJ := $(CLI_SRC:%.c=$(BUILD)/%.o)
TEST_OBJ := $(TEST_SRC:%.c=$(BUILD)/%.o)

STATIC := $(BUILD)/libchrysalis.a
SHARED := $(BUILD)/libchrysalis.so
CLI    := $(BUILD)/chrysalis
UNIT   := $(BUILD)/unit_tests
REPLAY := $(BUILD)/fuzz_replay

.PHONY: all lib cli test asan tsan fuzz bench bench-report clean format lint example python python-test
all: lib cli

lib: $(STATIC) $(SHARED)
cli: $(CLI)

$(BUILD)/src/kernels/dist_avx2.o: EXTRA := -mavx2 -mfma
$(BUILD)/src/kernels/dist_avx512.o: EXTRA := -mavx512f -mavx512bw -mavx512vl -mfma -mavx2
$(BUILD)/src/kernels/score_avx512.o: EXTRA := -mavx512f -mavx512bw -mavx512vl -mfma -mavx2 -mpopcnt
$(BUILD)/src/kernels/dist_vnni.o: EXTRA := -mavx512f -mavx512bw -mavx512vl -mavx512vnni
$(BUILD)/src/kernels/crc32c_sse42.o: EXTRA := -msse4.2
$(BUILD)/src/kernels/crc32c_vpclmul.o: EXTRA := -mavx512f -mvpclmulqdq -mpclmul -msse4.2

# Library sources get CHRYS_LIB_SOURCE: internal.h then poisons the libc allocator names there.
$(BUILD)/src/%.o: LIBDEF := -DCHRYS_LIB_SOURCE

$(BUILD)/%.o: %.c $(wildcard include/*.h src/*.h src/*/*.h cli/*.h tests/*.h tests/*/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(EXTRA) $(LIBDEF) -c $< -o $@

$(STATIC): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(SHARED): $(LIB_OBJ)
	$(CC) -shared -o $@ $^ $(LDLIBS_ALL)

$(CLI): $(CLI_OBJ) $(CLI_LIB_OBJ) $(STATIC)
	$(CC) -o $@ $^ $(LDLIBS_ALL)

# the unit tests alone link OpenSSL: its SHA256 is the oracle for src/sha256.c
$(UNIT): $(TEST_OBJ) $(CLI_LIB_OBJ) $(STATIC)
	$(CC) -o $@ $^ $(LDLIBS_ALL) -lcrypto

$(REPLAY): $(BUILD)/tests/fuzz/fuzz_targets.o $(BUILD)/tests/fuzz/replay_main.o $(CLI_LIB_OBJ) $(STATIC)
	$(CC) -o $@ $^ $(LDLIBS_ALL)

$(BUILD)/bench_anchor: $(BUILD)/bench/bench_anchor.o $(CLI_LIB_OBJ) $(STATIC)
	$(CC) -o $@ $^ $(LDLIBS_BENCH)

units: $(UNIT) $(CLI) $(REPLAY) $(SHARED)

# The Python package, built in place: python/chrysalis/_chrysalis*.so over $(STATIC)
# (PYTHONPATH=python /usr/bin/python3 -c "import chrysalis"). PYTHON: Debian's interpreter.
PYTHON ?= /usr/bin/python3
python: $(STATIC)
	CHRYS_BUILD=$(BUILD) $(PYTHON) setup.py -q build_ext --inplace --build-temp $(BUILD)/pytemp

python-test: python $(CLI)
	CHRYS_CLI=$(CLI) PYTHONPATH=python $(PYTHON) -m pytest -q python/tests

test:
	bash tests/run_all.sh

asan:
	$(MAKE) MODE=asan units
	bash tests/run_suite.sh build/asan

# OpenBLAS's own worker threads hand work over through spin flags in uninstrumented code, which
# TSan cannot see (it reports their writes to our sgemm output tiles); with OPENBLAS_NUM_THREADS=1
# sgemm runs in the calling thread and every thread TSan watches is ours.
tsan:
	$(MAKE) MODE=tsan $(BUILD:release=tsan)/unit_tests
	OPENBLAS_NUM_THREADS=1 TSAN_OPTIONS="halt_on_error=1 exitcode=66" $(BUILD:release=tsan)/unit_tests concurrent

# libFuzzer targets (clang): build/fuzz/fuzz_{load,jsonl,fvecs,hnsw}; run e.g.
#   build/fuzz/fuzz_load -max_total_time=60 tests/fuzz/corpus/load
FUZZ_TARGETS := load jsonl fvecs hnsw
fuzz:
	$(MAKE) MODE=fuzz-lib CC=clang BUILD=build/fuzz build/fuzz/libchrysalis.a $(CLI_LIB_SRC:%.c=build/fuzz/%.o)
	for t in $(FUZZ_TARGETS); do \
	  clang $(CSTD) -O1 -g -fsanitize=fuzzer,address,undefined -Iinclude -Isrc -I/usr/include/cjson \
	    -DCHRYS_LIBFUZZER -DFUZZ_TARGET=fuzz_$${t}_one tests/fuzz/fuzz_targets.c \
	    $(CLI_LIB_SRC:%.c=build/fuzz/%.o) build/fuzz/libchrysalis.a -o build/fuzz/fuzz_$$t \
	    -pthread -lcjson -ldl -lm || exit 1; \
	done

$(BUILD)/bench_embed: $(BUILD)/bench/bench_embed.o $(STATIC)
	$(CC) -o $@ $^ $(LDLIBS_ALL)

$(BUILD)/bench_ivf: $(BUILD)/bench/bench_ivf.o $(CLI_LIB_OBJ) $(STATIC)
	$(CC) -o $@ $^ $(LDLIBS_BENCH)

$(BUILD)/bench_kmeans: $(BUILD)/bench/bench_kmeans.o $(CLI_LIB_OBJ) $(STATIC)
	$(CC) -o $@ $^ $(LDLIBS_BENCH)

$(BUILD)/bench_ivf_sq8: $(BUILD)/bench/bench_ivf_sq8.o $(CLI_LIB_OBJ) $(STATIC)
	$(CC) -o $@ $^ $(LDLIBS_BENCH)

$(BUILD)/bench_hnsw: $(BUILD)/bench/bench_hnsw.o $(CLI_LIB_OBJ) $(STATIC)
	$(CC) -o $@ $^ $(LDLIBS_ALL)

$(BUILD)/hnswlib_native: ../shared/tools/hnswlib_native.cpp
	@mkdir -p $(dir $@)
	g++ -O3 -march=native -std=c++17 -pthread $< -o $@

bench: $(BUILD)/bench_anchor $(BUILD)/bench_embed $(BUILD)/bench_ivf $(BUILD)/bench_kmeans $(BUILD)/bench_ivf_sq8 $(BUILD)/bench_hnsw $(CLI)

# bench/REPORT.md + bench/report/*.png, quick and complete (bench/report.sh --full for the large points)
bench-report:
	BUILD=$(BUILD) bash bench/report.sh

example: $(CLI)
	bash examples/run.sh $(CLI)

format:
	clang-format -i include/*.h src/*.c src/*.h src/*/*.c src/*/*.h cli/*.c cli/*.h tests/*.h tests/*/*.c bench/*.c

lint:
	@! grep -nE '\b(malloc|calloc|realloc|free|strdup)\(' src/*.c src/*/*.c | grep -v 'src/alloc.c' || \
	  (echo "lint: use chrys_malloc/chrys_free inside src/"; exit 1)
	cppcheck --quiet --error-exitcode=1 --enable=warning,portability --inline-suppr \
	  --suppress=missingIncludeSystem -Iinclude -Isrc src cli

clean:
	rm -rf build
