{#- The shift (from dim_shift) each row of `from_cte` lies in: the one whose UTC bounds contain
    `at_column`. Candidate production dates are the local date of the instant ± 1 day, so the
    join is an equality join on (site, date) plus a range check, and DST days need no special
    case (dim_shift already carries their 7 h / 9 h bounds). Returns one row per matched key. -#}
{% macro assign_shift(from_cte, key_column, at_column, site_column='site_code') -%}
    select
        {{ from_cte }}.{{ key_column }},
        shifts.shift_id,
        shifts.production_date,
        shifts.shift_code,
        shifts.shift_start_at,
        shifts.shift_end_at
    from {{ from_cte }}
    inner join {{ ref('plant_sites') }} as sites
        on sites.site_code = {{ from_cte }}.{{ site_column }}
    cross join (values (-1), (0), (1)) as day_offsets (day_offset)
    inner join {{ ref('dim_shift') }} as shifts
        on
            shifts.site_code = {{ from_cte }}.{{ site_column }}
            and shifts.production_date
            = ({{ from_cte }}.{{ at_column }} at time zone sites.timezone)::date + day_offsets.day_offset
    where
        {{ from_cte }}.{{ at_column }} >= shifts.shift_start_at
        and {{ from_cte }}.{{ at_column }} < shifts.shift_end_at
{%- endmacro %}
