-- Removes the updated_at triggers and set_updated_at().
DROP TRIGGER tasks_set_updated_at ON tasks;
DROP TRIGGER projects_set_updated_at ON projects;
DROP TRIGGER users_set_updated_at ON users;
DROP FUNCTION set_updated_at();
