"""prefork's benchmark runner: ``python -m bench`` from the repository root.

See docs/performance.md ("Running the benchmarks"). Not part of the installed
package; nothing in prefork imports it.
"""
