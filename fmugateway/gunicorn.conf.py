# Threads let requests that wait on a run (?wait=N) park without holding a process.
worker_class = "gthread"
workers = 2
threads = 8
timeout = 60
graceful_timeout = 30
accesslog = "-"
forwarded_allow_ips = "*"
