skiplock migrate
skiplock worker myapp:app --concurrency 10 --version 2026.11.1
