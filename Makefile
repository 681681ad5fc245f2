# Two commands do everything: `make run` and `make test`.
BUILD_DIR ?= build
BUILD_TYPE ?= Release
JOBS ?= $(shell nproc)
CONFIG ?= examples/single-node.yaml
# Seconds each fuzzer runs under `make fuzz` (`make fuzz-smoke`: 15).
FUZZ_SECONDS ?= 300

.PHONY: all setup configure build run test asan test-asan test-tsan bench clean format fuzz-build \
        fuzz fuzz-smoke

all: build

setup:
	@scripts/setup

$(BUILD_DIR)/CMakeCache.txt:
	cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE)

configure: setup $(BUILD_DIR)/CMakeCache.txt

build: configure
	cmake --build $(BUILD_DIR) -j $(JOBS)

run: build
	$(BUILD_DIR)/nodes/troupe node --config $(CONFIG)

test: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS)
	$(MAKE) fuzz-smoke

# Every benchmark under tests/bench/, each against its baseline in the same
# run; the table also goes to docs/benchmarks.md.
bench: build
	cmake --build $(BUILD_DIR) -j $(JOBS) --target troupe_cluster_bench troupe_agent_density_bench troupe_local_path_bench
	scripts/bench $(BUILD_DIR)

# AddressSanitizer + UBSan build in its own tree (test-asan is the same).
test-asan: asan
asan:
	@scripts/setup
	cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DTROUPE_SANITIZE=ON
	cmake --build build-asan -j $(JOBS)
	cd build-asan && ctest --output-on-failure -j $(JOBS)

# ThreadSanitizer build in its own tree. Debian's CAF is not instrumented:
# tests/tsan.supp silences reports inside it (see docs/operations.md).
test-tsan:
	@scripts/setup
	cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DTROUPE_TSAN=ON
	cmake --build build-tsan -j $(JOBS)
	cd build-tsan && TSAN_OPTIONS="suppressions=$(CURDIR)/tests/tsan.supp second_deadlock_stack=1" \
	  ctest --output-on-failure -j $(JOBS)

# libFuzzer targets (tests/fuzz), built by clang in their own tree with
# ASan and UBSan. `make fuzz` runs each for FUZZ_SECONDS from a scratch copy
# of its corpus; a crash fails it, naming the target and the input.
build-fuzz/CMakeCache.txt:
	CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=Debug -DTROUPE_FUZZ=ON

fuzz-build: setup build-fuzz/CMakeCache.txt
	cmake --build build-fuzz -j $(JOBS)

fuzz: fuzz-build
	scripts/fuzz build-fuzz $(FUZZ_SECONDS)

# What CI runs (after ctest, in `make test`): every target briefly.
fuzz-smoke:
	$(MAKE) fuzz FUZZ_SECONDS=15

format:
	find runtime actors cluster nodes examples tests -name '*.hpp' -o -name '*.cpp' | xargs clang-format -i

clean:
	rm -rf $(BUILD_DIR) build-asan build-tsan build-fuzz
