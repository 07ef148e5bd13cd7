"""The C backend: training IR -> a self-contained C project (jinja2 templates, one emitter per op family)."""
