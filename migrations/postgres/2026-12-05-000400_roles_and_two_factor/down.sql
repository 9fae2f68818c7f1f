DROP TABLE recovery_codes;
DROP TABLE two_factor;
UPDATE users SET role = 'customer' WHERE role = 'support';
ALTER TABLE users DROP CONSTRAINT IF EXISTS users_role_check;
ALTER TABLE users ADD CONSTRAINT users_role_check CHECK (role IN ('customer', 'admin'));
