{#- The shift (from dim_shift) each row of `from_cte` lies in: the one whose UTC bounds contain
    `at_column`. Candidate production dates are the local date of the instant ± 1 day, unnested
    per row, so the join to dim_shift is an equality (hash) join on (site, date) plus a range
    check — whatever the planner guesses about how many rows an interval holds (a cross join
    of the offsets let it join on the site only when the raw tables had no statistics yet) —
    and DST days need no special case (dim_shift already carries their 7 h / 9 h bounds).
    Returns one row per matched key: the only place the platform places an instant in a
    production day (facts, gate views and publish models all call it). -#}
{% macro assign_shift(from_cte, key_column, at_column, site_column='site_code') -%}
    select
        candidates.{{ key_column }},
        shifts.shift_id,
        shifts.production_date,
        shifts.shift_code,
        shifts.shift_start_at,
        shifts.shift_end_at
    from (
        select
            {{ from_cte }}.{{ key_column }},
            {{ from_cte }}.{{ site_column }} as placed_site_code,
            {{ from_cte }}.{{ at_column }} as placed_at,
            unnest(array[-1, 0, 1])
            + ({{ from_cte }}.{{ at_column }} at time zone sites.timezone)::date as candidate_date
        from {{ from_cte }}
        inner join {{ ref('plant_sites') }} as sites
            on sites.site_code = {{ from_cte }}.{{ site_column }}
    ) as candidates
    inner join {{ ref('dim_shift') }} as shifts
        on
            shifts.site_code = candidates.placed_site_code
            and shifts.production_date = candidates.candidate_date
    where
        candidates.placed_at >= shifts.shift_start_at
        and candidates.placed_at < shifts.shift_end_at
{%- endmacro %}
