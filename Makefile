# The README's commands. Each one does its own set-up (scripts/setup.sh).
.PHONY: demo test setup

demo:
	./scripts/demo.sh

test:
	./scripts/test.sh

setup:
	./scripts/setup.sh

# ThreadSanitizer build of uccl._native running the concurrency tests (docs/tsan.md).
.PHONY: tsan
tsan:
	./scripts/tsan.sh
