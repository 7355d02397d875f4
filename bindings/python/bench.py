"""Measures the Python layer: `dvm.run`'s mean time per hello against the same work done in
Rust alone (`Dvm._native_loop`), and hellos per second from one and two Python threads.

    DVM_HOME=... python bindings/python/bench.py [COUNT]
"""

import sys
import threading
import time

import dvm

COUNT = int(sys.argv[1]) if len(sys.argv) > 1 else 300
CODE = {"python": "print(1)", "javascript": "console.log(1)"}


def python_loop(engine, runtime, count):
    started = time.perf_counter()
    for _ in range(count):
        engine.run(CODE[runtime], runtime, cache=False)
    return (time.perf_counter() - started) / count


def per_second(work, threads):
    done = [0] * threads

    def worker(i):
        done[i] = work()

    started = time.perf_counter()
    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return sum(done) / (time.perf_counter() - started)


def main():
    engine = dvm.default()
    for runtime in CODE:
        engine.run(CODE[runtime], runtime, cache=False)
        native = min(engine._native_loop(CODE[runtime], runtime, COUNT) for _ in range(3))
        through = min(python_loop(engine, runtime, COUNT) for _ in range(3))
        print(f"{runtime}: Rust {native * 1e3:.3f} ms/run, from Python {through * 1e3:.3f} "
              f"ms/run, Python layer {(through - native) * 1e3:+.3f} ms")
        for threads in (1, 2):
            py_rate = per_second(lambda: python_loop(engine, runtime, COUNT) and COUNT, threads)
            rust_rate = per_second(
                lambda: engine._native_loop(CODE[runtime], runtime, COUNT) and COUNT, threads)
            print(f"  {threads} thread(s): {py_rate:.0f} runs/s from Python, "
                  f"{rust_rate:.0f} runs/s in Rust")


if __name__ == "__main__":
    main()
