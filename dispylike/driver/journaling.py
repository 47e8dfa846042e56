"""Writing the recover file for the client engine (a mixin: state lives in Engine,
which calls these on the I/O loop).

Records are appended as jobs are submitted, dispatched and ended, and written
ahead of every RunJobs batch (so the file names a job's node before the node has
it) and at least every ``JOURNAL_EVERY`` seconds: no system call per job.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..job import DispyJob

log = logging.getLogger('dispylike')

#: Seconds between writes of the recover file when no job is sent (group commit).
JOURNAL_EVERY = 0.1


class Journaling:
    """journal_id, _journal_sync (write-ahead), the periodic writer, closing the file."""

    def journal_id(self, job: DispyJob) -> None:
        """The program gave ``job`` a new id (called on the loop)."""
        if self.journal is not None and job._uid in self.jobs:
            self._journal_ids.append(job)

    def _journal_sync(self) -> None:
        """Append what happened since the last call, then write it (no fsync: the page
        cache survives the client process; the file is fsynced at close)."""
        journal = self.journal
        if journal is None:
            return
        if self._journal_jobs:
            jobs, self._journal_jobs = self._journal_jobs, []
            for job in jobs:
                if job._payload is None:
                    continue          # already over: nothing to recover
                # a SplitPayload is over KEEP_ARGS_MAX: its arguments are not kept anyway
                blob = job._payload if type(job._payload) is bytes else b''
                try:
                    journal.submitted(job._uid, job.id, blob)
                except Exception:  # noqa: BLE001 - an id plain pickle cannot store
                    journal.submitted(job._uid, repr(job.id), blob)
        if self._journal_dispatches:
            dispatches, self._journal_dispatches = self._journal_dispatches, []
            for uid, key, attempt in dispatches:
                journal.dispatched(uid, key, attempt)
        if self._journal_ids:
            renamed, self._journal_ids = self._journal_ids, []
            for job in renamed:
                try:
                    journal.job_id(job._uid, job.id)
                except Exception:  # noqa: BLE001 - as above
                    journal.job_id(job._uid, repr(job.id))
        if journal.pending_bytes:
            try:
                journal.flush(sync=False)
            except OSError as exc:
                log.error('recover file %s: %s; it is no longer written', journal.path, exc)
                self.journal = None

    async def _journal_writer(self) -> None:
        while self.journal is not None:
            await asyncio.sleep(JOURNAL_EVERY)
            self._journal_sync()

    def _close_journal(self) -> None:
        journal, self.journal = self.journal, None
        if journal is None:
            return
        if self._journal_task is not None:
            self._journal_task.cancel()
        try:
            if self.jobs:     # jobs that never ended: keep the file for recover_jobs
                journal.flush(sync=True)
                journal.close()
                log.warning('%d job(s) did not end; recover file %s kept', len(self.jobs),
                            journal.path)
            else:
                journal.closed()
                journal.close(remove=True)
        except OSError as exc:
            log.error('recover file %s: %s', journal.path, exc)
