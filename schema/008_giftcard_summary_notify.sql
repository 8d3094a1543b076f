-- Change notification for giftcard_summary: every transaction that changes the table (the
-- projector's batches, a rebuild's TRUNCATE, a manual fix in psql) sends one NOTIFY on the
-- channel 'giftcard_summary' when it commits; none when it rolls back. Listeners (cqrsd's web
-- page, or any client running LISTEN giftcard_summary) then re-read the table. The payload is
-- empty: PostgreSQL folds identical notifications of one transaction into one, so a batch of
-- many events costs a single notification.
CREATE FUNCTION public.giftcard_summary_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('giftcard_summary', '');
  RETURN NULL;
END
$$;

CREATE TRIGGER giftcard_summary_changed
  AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON public.giftcard_summary
  FOR EACH STATEMENT EXECUTE FUNCTION public.giftcard_summary_notify();
