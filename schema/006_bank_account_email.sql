-- The bank demo's accounts carry the owner's e-mail (unique among open accounts, enforced by the
-- account_email claims in cqrs.unique_claims, not by this read model).
ALTER TABLE public.bank_accounts ADD COLUMN email text;
CREATE INDEX bank_accounts_by_email ON public.bank_accounts (email);
