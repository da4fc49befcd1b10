"""The implementations the columnar rewrites replaced (issue 14), kept here only as references: tests (and
``bench/pipeline_scale.py``'s equivalence run) prove the package's new code gives the same outputs. Nothing in the
package imports them."""
