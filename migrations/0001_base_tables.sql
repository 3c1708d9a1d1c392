-- Base tables, as the Prisma app that writes them creates them: quoted camelCase columns, TEXT ids,
-- TIMESTAMP(3) holding UTC. The app may own these tables already, so everything here is IF NOT EXISTS:
-- on such a database this migration changes nothing.

CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE IF NOT EXISTS "Company" (
    "id"              TEXT         NOT NULL,
    "domain"          TEXT,
    "name"            TEXT         NOT NULL,
    "industry"        TEXT,
    "minEmployeeSize" INTEGER,
    "maxEmployeeSize" INTEGER,
    "revenue"         BIGINT,                -- whole currency units
    "address"         TEXT,
    "city"            TEXT,
    "state"           TEXT,
    "country"         TEXT,
    "zipCode"         TEXT,
    "phone"           TEXT,
    "mobilePhone"     TEXT,
    -- Prisma's @default(now()) / @updatedAt hold UTC; the defaults say so explicitly so that a session
    -- with another TimeZone setting cannot write local time into them.
    "createdAt"       TIMESTAMP(3) NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    "updatedAt"       TIMESTAMP(3) NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    CONSTRAINT "Company_pkey" PRIMARY KEY ("id")
);

CREATE TABLE IF NOT EXISTS "Prospect" (
    "id"            TEXT         NOT NULL,
    "companyId"     TEXT         NOT NULL,
    "salutation"    TEXT,
    "firstName"     TEXT,
    "lastName"      TEXT,
    "email"         TEXT,
    "jobTitle"      TEXT,
    "jobTitleLevel" TEXT,
    "department"    TEXT,
    "jobTitleLink"  TEXT,
    "address"       TEXT,
    "city"          TEXT,
    "state"         TEXT,
    "country"       TEXT,
    "zipCode"       TEXT,
    "phone"         TEXT,
    "mobilePhone"   TEXT,
    "createdAt"     TIMESTAMP(3) NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    "updatedAt"     TIMESTAMP(3) NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    CONSTRAINT "Prospect_pkey" PRIMARY KEY ("id"),
    -- Prisma's default for a required relation.
    CONSTRAINT "Prospect_companyId_fkey" FOREIGN KEY ("companyId")
        REFERENCES "Company" ("id") ON DELETE RESTRICT ON UPDATE CASCADE
);

-- The JOIN behind every view goes through it, and so do deletes of companies (the foreign key check).
CREATE INDEX IF NOT EXISTS "Prospect_companyId_idx" ON "Prospect" ("companyId");
