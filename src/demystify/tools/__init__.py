"""Developer tools run by `make`, never by a stage: leftovers (make run), params_file (make params),
pr_comment (make pr-report), sweep (make sweep-table)."""
