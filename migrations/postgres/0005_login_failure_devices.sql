-- The device cookie (if any) a failed sign-in came with: failures from a browser that signed in
-- to the account before count against that browser only, so others cannot lock the owner out.
ALTER TABLE login_failures ADD COLUMN device TEXT;
