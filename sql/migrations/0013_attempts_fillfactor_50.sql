-- 0013: room on attempts pages for every row's one update. At fillfactor 70 (0006) about
-- 30% of completions found no room on the page of their attempt (its batch of attempts
-- came in together and is completed together), so they were non-HOT: a new page and two
-- index entries each. At 50, 96% are HOT (a serial claim + complete loop on PostgreSQL 18:
-- 69-70% -> 96% HOT; completion 29.2 -> 28.4 us a run of backend CPU, twice).
ALTER TABLE skiplock.attempts SET (fillfactor = 50);
