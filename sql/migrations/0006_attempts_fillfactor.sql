-- 0006: room on attempts pages for their one update (EXECUTING -> final), which changes no
-- indexed column: with free space on the page it is a HOT update, with no index entries.
ALTER TABLE skiplock.attempts SET (fillfactor = 70);
