-- The object class of a generic (out-of-domain) labelled image set's samples; NULL for knees.
ALTER TABLE samples ADD COLUMN class INTEGER CHECK (class BETWEEN 0 AND 255);
