-- Least-privilege roles for cqrsd (see docs/security.md).
--
--   psql -d <database> -v app_role=cqrsd_app -v reader_role=cqrsd_reader -f config/roles.sql
--
-- Run it as the role that owns the schema (the one that ran `cqrsd migrate`), after migrating.
-- It creates, when missing, two roles without passwords (set them with ALTER ROLE ... PASSWORD,
-- or use certificate or peer authentication), and grants:
--
--   app_role     what the daemon uses at run time and nothing else: read and append events
--                (no UPDATE or DELETE: the store is append-only), its bookkeeping tables, and
--                the shipped read models. It cannot create, alter or drop anything, so it
--                cannot apply migrations: run `cqrsd migrate` as the owner on upgrades.
--   reader_role  SELECT on the read models only: for psql, reports and other services.
--
-- Re-running it is harmless. Read models added by later migrations need their grants added
-- here as well.
\set ON_ERROR_STOP on

SELECT format('CREATE ROLE %I LOGIN', :'app_role')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'app_role') \gexec
SELECT format('CREATE ROLE %I LOGIN', :'reader_role')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'reader_role') \gexec

SELECT format('GRANT CONNECT ON DATABASE %I TO %I, %I', current_database(), :'app_role',
              :'reader_role') \gexec

-- The daemon.
GRANT USAGE ON SCHEMA cqrs TO :"app_role";
GRANT SELECT ON cqrs.schema_migrations TO :"app_role";
GRANT SELECT, INSERT ON cqrs.events TO :"app_role";
GRANT SELECT, INSERT ON cqrs.command_results TO :"app_role";
GRANT SELECT, INSERT, UPDATE ON cqrs.snapshots TO :"app_role";
GRANT SELECT, INSERT, UPDATE, DELETE ON cqrs.checkpoints TO :"app_role";
GRANT SELECT, INSERT, DELETE ON cqrs.dead_letters TO :"app_role";
GRANT SELECT, INSERT, UPDATE, DELETE ON cqrs.process_instances TO :"app_role";
GRANT SELECT, INSERT, DELETE ON cqrs.unique_claims TO :"app_role";
GRANT SELECT, INSERT ON cqrs.correlations TO :"app_role";
GRANT SELECT, UPDATE ON cqrs.correlations_indexed TO :"app_role";
GRANT USAGE ON ALL SEQUENCES IN SCHEMA cqrs TO :"app_role";
GRANT EXECUTE ON FUNCTION cqrs.append_to_stream, cqrs.append_batch, cqrs.with_position,
  cqrs.append_claiming, cqrs.apply_unique_claims, cqrs.index_correlations TO :"app_role";
-- Projectors write the read models; a rebuild (cqrsctl handler reset) truncates them.
GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE
  ON public.giftcard_summary, public.bank_accounts, public.bank_transfers TO :"app_role";

-- Read-model readers.
GRANT USAGE ON SCHEMA public TO :"reader_role";
GRANT SELECT ON public.giftcard_summary, public.bank_accounts, public.bank_transfers
  TO :"reader_role";
