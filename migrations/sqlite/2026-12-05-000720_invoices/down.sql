DROP TABLE plan_past_due_grace;
DROP TABLE invoices;
