"""Small helpers every room uses: file writing, number display, distributed, hardware, progress.

``files``        atomic JSON / YAML / CSV / text writes, hashes
``display``      numbers and lists formatted for people
``distributed``  run on the main process, agree on errors across processes
``hardware``     memory and processes on this machine, bf16 support
``progress``     a bar on a terminal, plain lines in a log
``threads``      a thread map for I/O-bound work
``legacy``       files written when a scan was called a patient, read as they are named now
``lazy``         a package's public names imported on first use (``data``, ``evaluation``)
"""
