"""What a run costs, known before it runs: its work counted without computing (`count`, on the meta device:
`meta`, `work`), the device's rates measured once (`probes`, `rates`: `dfkd-bench calibrate`), and the
predicted seconds per phase (`predict`, with `peaks` where there is no calibration). Imported on demand
(it loads torch); `run --dry-run`, `sweep --dry-run` and the dry-run plan use `predict`."""
