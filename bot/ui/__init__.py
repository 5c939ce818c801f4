"""The Discord side's building blocks: every text a member, server manager or operator sees
(one module per audience), the result buttons, the job's reply, and the audit channel."""
