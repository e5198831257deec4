"""Developer tools run by `make`, never by a stage: leftovers (make run), params_file (make params),
pr_comment (make pr-report), sweep (make sweep-table); and repo_copy, the copy of the project that
the end-to-end tests and bench/pipeline.py run `dvc repro` in."""
