-- giftcard_summary's change notification leaves the projector's transaction.
--
-- schema/008 sent it from a statement trigger, so inside the transaction that changed the table.
-- PostgreSQL takes its notification lock when a notifying transaction commits and keeps it until
-- the commit's WAL flush is done, so every other notifying commit in the cluster waited for the
-- projector's: the event store's own wake-ups after each append among them. Under load that cost
-- the write path about a third of its throughput, whether or not anyone listened.
--
-- The projector's runtime now sends the notification after each committed batch and after a
-- reset, in a transaction of its own (Projector::change_channel). A change made by hand in psql
-- no longer notifies: follow it with NOTIFY giftcard_summary.
DROP TRIGGER giftcard_summary_changed ON public.giftcard_summary;
DROP FUNCTION public.giftcard_summary_notify();
