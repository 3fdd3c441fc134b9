# tern - top-level Makefile. Plain make, no generator: see README.md.
#
#   make            build build/tern (optimised) 
#   make asan       build build/asan/tern (ASan + UBSan)
#   make run        install missing packages, build, run on the default config
#   make test       install missing packages, build both, run every test
#   make bench      run the benchmarks under bench/
#   make fuzz       build the libFuzzer targets (build/fuzz/fuzz_*)
#   make fuzz-long  run each fuzz target for FUZZ_SECONDS (docs/testing.md)

CC      ?= gcc
PKGS    := libevent libevent_pthreads libevent_openssl openssl libunbound libidn2 zlib
WARN    := -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wvla -Wpointer-arith \
           -Wstrict-prototypes -Wmissing-prototypes -Wno-unused-parameter
BASEFLAGS := -std=c17 -D_GNU_SOURCE -g -pthread $(WARN) -Isrc -Ibuild/gen
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
LIBS    = $(PKG_LIBS) -lcrypt -pthread

OPT_CFLAGS  := -O2 -D_FORTIFY_SOURCE=2 -fstack-protector-strong
ASAN_CFLAGS := -O1 -fno-omit-frame-pointer -fsanitize=address,undefined \
               -fno-sanitize-recover=undefined

# One folder per layer and process role (docs/architecture.md); the
# include direction between them is checked by scripts/check-layers.py.
SRC_ALL   := $(sort $(wildcard src/*/*.c))
SRC_LIB   := $(filter-out src/cmd/main.c,$(SRC_ALL))
HDR_ALL   := $(wildcard src/*/*.h)
GEN_SRC   := build/gen/config_default.c
UNIT_SRC  := $(sort $(wildcard tests/unit/test_*.c))

OBJ_LIB      := $(patsubst src/%.c,build/obj/%.o,$(SRC_LIB)) build/obj/config_default.o
OBJ_LIB_ASAN := $(patsubst src/%.c,build/asan/obj/%.o,$(SRC_LIB)) build/asan/obj/config_default.o
UNIT_BIN      := $(patsubst tests/unit/%.c,build/tests/%,$(UNIT_SRC))
UNIT_BIN_ASAN := $(patsubst tests/unit/%.c,build/asan/tests/%,$(UNIT_SRC))

.PHONY: all asan run test unit deps bench clean docs fuzz fuzz-long check-layers
all: build/tern

asan: build/asan/tern

deps:
	@sh scripts/deps.sh

build/gen/config_default.c: etc/default.conf scripts/embed.sh
	@mkdir -p $(dir $@)
	sh scripts/embed.sh config_default_text_data $< > $@

# V=1 shows the full compiler command lines.
Q := $(if $(V),,@)

build/obj/%.o: src/%.c $(HDR_ALL)
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	$(Q)$(CC) $(BASEFLAGS) $(OPT_CFLAGS) $(PKG_CFLAGS) -c $< -o $@
build/obj/config_default.o: build/gen/config_default.c
	@echo "  CC      $<"
	$(Q)$(CC) $(BASEFLAGS) $(OPT_CFLAGS) -c $< -o $@
build/asan/obj/%.o: src/%.c $(HDR_ALL)
	@mkdir -p $(dir $@)
	@echo "  CC asan $<"
	$(Q)$(CC) $(BASEFLAGS) $(ASAN_CFLAGS) $(PKG_CFLAGS) -c $< -o $@
build/asan/obj/config_default.o: build/gen/config_default.c
	@mkdir -p $(dir $@)
	@echo "  CC asan $<"
	$(Q)$(CC) $(BASEFLAGS) $(ASAN_CFLAGS) -c $< -o $@

build/tern: build/obj/cmd/main.o $(OBJ_LIB)
	@echo "  LD      $@"
	$(Q)$(CC) $(BASEFLAGS) $(OPT_CFLAGS) -o $@ $^ $(LIBS)
build/asan/tern: build/asan/obj/cmd/main.o $(OBJ_LIB_ASAN)
	@echo "  LD      $@"
	$(Q)$(CC) $(BASEFLAGS) $(ASAN_CFLAGS) -o $@ $^ $(LIBS)

build/tests/%: tests/unit/%.c $(OBJ_LIB) $(wildcard tests/unit/*.h)
	@mkdir -p $(dir $@)
	@echo "  CC LD   $@"
	$(Q)$(CC) $(BASEFLAGS) $(OPT_CFLAGS) $(PKG_CFLAGS) -Itests/unit -o $@ $< $(OBJ_LIB) $(LIBS) -lcmocka
build/asan/tests/%: tests/unit/%.c $(OBJ_LIB_ASAN) $(wildcard tests/unit/*.h)
	@mkdir -p $(dir $@)
	@echo "  CC LD   $@"
	$(Q)$(CC) $(BASEFLAGS) $(ASAN_CFLAGS) $(PKG_CFLAGS) -Itests/unit -o $@ $< $(OBJ_LIB_ASAN) $(LIBS) -lcmocka

unit: $(UNIT_BIN) $(UNIT_BIN_ASAN)

run: deps
	@$(MAKE) --no-print-directory build/tern
	./build/tern serve

test: deps check-layers
	@$(MAKE) --no-print-directory build/tern build/asan/tern unit fuzz
	/usr/bin/python3 tests/run.py

check-layers:
	@/usr/bin/python3 scripts/check-layers.py

docs: build/tern
	./build/tern config-doc > docs/configuration.md

build/bench/seglog: bench/seglog.c $(OBJ_LIB)
	@mkdir -p $(dir $@)
	@echo "  CC LD   $@"
	$(Q)$(CC) $(BASEFLAGS) $(OPT_CFLAGS) $(PKG_CFLAGS) -o $@ $< $(OBJ_LIB) $(LIBS)

bench: deps build/tern build/bench/seglog
	./build/bench/seglog
	sh bench/smtp-source.sh
	sh bench/relay.sh

# libFuzzer targets (clang), one per parser and one for the whole session:
# every tests/fuzz/fuzz_*.c is a target. The library is compiled once with
# coverage and sanitizers into build/fuzz/libtern.a and each target links
# against it. UBSan aborts (no recovery) so that libFuzzer sees undefined
# behaviour as a crash. Not -Werror: clang warns about things gcc does not,
# and the gcc builds are the ones that enforce warnings. docs/testing.md.
FUZZ_CC     := clang
FUZZ_SAN    := -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_CFLAGS := -std=c17 -D_GNU_SOURCE -g -O1 -fno-omit-frame-pointer -pthread \
               -Wall -Wextra -Wno-unused-parameter -Isrc -Ibuild/gen $(FUZZ_SAN)
FUZZ_TARGET_SRC := $(sort $(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BIN := $(patsubst tests/fuzz/%.c,build/fuzz/%,$(FUZZ_TARGET_SRC))
OBJ_LIB_FUZZ := $(patsubst src/%.c,build/fuzz/obj/%.o,$(SRC_LIB)) \
                build/fuzz/obj/config_default.o

fuzz: $(FUZZ_BIN)

build/fuzz/obj/%.o: src/%.c $(HDR_ALL)
	@mkdir -p $(dir $@)
	@echo "  CC fuzz $<"
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link $(PKG_CFLAGS) -c $< -o $@
build/fuzz/obj/config_default.o: build/gen/config_default.c
	@mkdir -p $(dir $@)
	@echo "  CC fuzz $<"
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@
build/fuzz/libtern.a: $(OBJ_LIB_FUZZ)
	@echo "  AR      $@"
	$(Q)rm -f $@ && ar rcs $@ $^
build/fuzz/%: tests/fuzz/%.c build/fuzz/libtern.a $(HDR_ALL) $(wildcard tests/fuzz/*.h)
	@echo "  CC LD   $@"
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer $(PKG_CFLAGS) -o $@ $< \
	    build/fuzz/libtern.a $(LIBS)

# Each target for FUZZ_SECONDS (default 1200) on a copy of its corpus kept
# in build/fuzz/corpus/; prints executions, coverage, new units, crashes.
fuzz-long: fuzz
	/usr/bin/python3 tests/fuzz/long.py

clean:
	rm -rf build
