"""What orchestrates the rest: runs, studies, dashboard jobs, import and export, the command line.

    spec       RunSpec and the one validation path (check, validate) the CLI, jobs and Launch share
    checks     the checks behind it
    runner     execute_run: a run top to bottom, writing result files
    study      a grid of runs over knobs or hyperparameters x seeds;  ray_runs: whole runs on Ray actors
    jobs       the dashboard's job folders: submit, list, cancel, poll (ingest);  worker: a job's process
    demos      the empty store's one-click runs
    importer   other tools' per-persona results as a run (import_formats reads the files);  export: PEFT folders
    paths      what the dashboard may open on the server
    cli        `python -m engine ...`;  landing: where a CLI run's results land, and what is said when they cannot

The top layer: imports any other package, and none imports it.
"""
