-- Issue 3, the rest of RULES-REFERENCE 7.2:
-- GAS-05 "retry once": a retried command names the command it repeats (a retry is never retried again).
ALTER TABLE command ADD COLUMN IF NOT EXISTS retry_of text REFERENCES command (id);
-- DEV-03 judges "a building's devices": shops and storage units name the building they are in (none: the site
-- is its own building).
ALTER TABLE site ADD COLUMN IF NOT EXISTS building text;
CREATE INDEX IF NOT EXISTS site_building ON site (building) WHERE building IS NOT NULL;
-- GAS-08 checks a gas detector's mounting height against the gas: LPG is heavier than air (within 0.3 m of the
-- floor), natural gas lighter (within 0.3 m of the ceiling), GB 50028 10.8.2. Unknown (null): not judged.
ALTER TABLE device ADD COLUMN IF NOT EXISTS mounting text CHECK (mounting IN ('floor', 'ceiling', 'wall'));
