DROP TABLE task_categories;
DROP TABLE tasks;
DROP TABLE categories;
